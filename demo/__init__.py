"""The Streamlit demo (installed as `mu_llama.demo`; run it with `mu-llama demo` or `streamlit run demo/app.py`).

UI only: every result on the page comes from a library call (mu_llama.audio, .model/.tasks, .emotion, .generate,
.plots). `app.py` is the page; `services.py` holds the cached loaders and the session bookkeeping it needs.
"""

from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")
