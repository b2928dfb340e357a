"""Evaluation harness: coco-style caption metrics, MiniLM embedding similarity, MU-LLaMA-compatible metrics,
fact accuracy parsed from text, and baselines, all offline.

    from mu_llama.eval import evaluate, load_references, load_predictions
    report = evaluate(load_predictions("pred.jsonl"), load_references("corpus/", split="test"))
    print(report.to_markdown()); report.save("reports/run1")
"""

from mu_llama.eval.baselines import BASELINES, baseline_predictions, evaluate_baselines
from mu_llama.eval.data import Prediction, QAPair, Reference, load_predictions, load_references, write_predictions
from mu_llama.eval.facts_parse import ParsedFacts, parse_facts
from mu_llama.eval.harness import COMPAT_METRICS, EVAL_MODES, STANDARD_METRICS, EvalOptions, evaluate
from mu_llama.eval.report import EvalReport

__all__ = [
    "BASELINES", "COMPAT_METRICS", "EVAL_MODES", "STANDARD_METRICS", "EvalOptions", "EvalReport", "ParsedFacts",
    "Prediction", "QAPair", "Reference", "baseline_predictions", "evaluate", "evaluate_baselines",
    "load_predictions", "load_references", "parse_facts", "write_predictions",
]
