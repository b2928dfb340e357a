"""`mu-llama demo [--port 8501] [--address 127.0.0.1] [--model NAME|DIR] [--generator DIR] [--max-upload-mb 25]`

Replaces itself (exec, on POSIX) with `streamlit run <installed mu_llama/demo/app.py> --server.headless true ...`,
so Ctrl-C or a supervisor's SIGTERM stops the server itself; elsewhere it runs streamlit as a child and waits. The page's settings travel as MU_LLAMA_DEMO_* environment variables (demo/services.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the Streamlit demo (caption, ask, feel, generate)",
                              description="Serve the interactive demo with Streamlit (headless; open the printed URL).")
    p.add_argument("--port", type=int, default=8501, help="TCP port (default 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 serves the whole network)")
    p.add_argument("--model", default=None,
                   help="model the page starts with: registry name or saved model directory "
                        "(default: mu-llama-mini, falling back to untrained:smollm2 when it is not installed)")
    p.add_argument("--generator", default=None, help="generator checkpoint directory (default: the packaged one)")
    p.add_argument("--max-upload-mb", type=int, default=25, help="largest upload accepted, in MB (default 25)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest clip accepted, in seconds (default 600)")
    p.set_defaults(func=run)


def streamlit_command(args) -> list[str]:
    from mu_llama.demo import APP_PATH

    return [sys.executable, "-m", "streamlit", "run", str(APP_PATH),
            "--server.headless", "true",
            "--server.port", str(args.port),
            "--server.address", args.address,
            "--server.maxUploadSize", str(args.max_upload_mb),
            "--server.fileWatcherType", "none",      # an installed app does not change under the server
            "--client.showErrorDetails", "none",     # an unexpected exception never shows a traceback on the page
            "--client.toolbarMode", "minimal",
            "--browser.gatherUsageStats", "false"]   # nothing leaves the machine


def demo_env(args) -> dict[str, str]:
    env = dict(os.environ)
    env["MU_LLAMA_DEMO_MAX_UPLOAD_MB"] = str(args.max_upload_mb)
    env["MU_LLAMA_DEMO_MAX_SECONDS"] = str(args.max_seconds)
    for name, value in (("MU_LLAMA_DEMO_MODEL", args.model), ("MU_LLAMA_DEMO_GENERATOR", args.generator)):
        if value:
            env[name] = value
    return env


def run(args) -> int:
    from mu_llama.errors import ConfigError

    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the demo needs streamlit and matplotlib: pip install 'mu-llama[demo]'")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"invalid --port {args.port}; must be in 1..65535")
    if args.max_upload_mb < 1 or not args.max_seconds > 0:
        raise ConfigError("--max-upload-mb must be >= 1 and --max-seconds > 0")
    print(f"mu-llama demo: serving on http://{args.address}:{args.port}", file=sys.stderr)
    cmd, env = streamlit_command(args), demo_env(args)
    if os.name == "posix":  # become the server: signals (Ctrl-C, a supervisor's SIGTERM) reach streamlit directly
        sys.stderr.flush()
        os.execve(sys.executable, cmd, env)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
