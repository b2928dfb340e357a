"""The open music-caption corpus: music21-corpus works and popular-style arrangements of their melodies, rendered
with FluidSynth, each clip with a measured FactSheet, varied captions and MusicQA-style QA pairs (docs/corpus/).

    from mu_llama.corpus import BuildOptions, build_corpus, load_records
    build_corpus(BuildOptions(out="data/corpus", clips=6600))
    train = [r for r in load_records("data/corpus") if r["split"] == "train"]
"""

from mu_llama.corpus.build import BuildOptions, BuildReport, assemble, build_corpus, finished_records
from mu_llama.corpus.splits import SPLITS, split_of
from mu_llama.corpus.stats import corpus_stats, load_records

__all__ = ["SPLITS", "BuildOptions", "BuildReport", "assemble", "build_corpus", "corpus_stats", "finished_records",
           "load_records", "split_of"]
