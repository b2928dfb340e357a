"""Where the corpus's music comes from: collections of the music21 corpus, their works, and their licence facts.

A *collection* is a folder (or a set of files) of the music21 core corpus with shared metadata: composer, era, genre,
the style its plain renders get, a tempo range that suits it, and what we know about its licence. A *work* is the unit
that splits are made by (a chorale, a mass, a quartet, a folk tune): its `work_id` is stable across builds, so the same
work always lands in the same split. One work may have several files (the movements of a quartet, the sections of a
mass, variant harmonisations of the same BWV number); `WorkRef.files` lists them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from mu_llama.errors import choice_error

# --- licence facts (shipped with every corpus as LICENCES.md / licences.json) ---------------------------------------
# Compositions are all out of copyright (composers dead > 100 years, or traditional). The *encodings* are what carry
# restrictions: music21's corpus/license.txt says some "may not be used for commercial uses". We record what the
# corpus files and their folders state, and mark everything whose encoding terms are not explicitly permissive as
# non-commercial, to be safe.
MUSIC21_NOTE = ("music21 corpus/license.txt: encodings distributed with the permission of the encoders; "
                "some may not be used for commercial uses; see licences embedded in files or folders.")


@dataclass(frozen=True)
class Licence:
    composition: str       # status of the music itself
    encoding: str          # who encoded it and on what terms, as far as the corpus says
    commercial_use: str    # "no" | "unclear" | "yes"


LICENCES: dict[str, Licence] = {
    "bach_chorales": Licence("public domain (J. S. Bach, d. 1750)",
                             "music21 corpus MusicXML/Humdrum encodings; Roman-numeral analyses by the "
                             "Riemenschneider/Tymoczko project (rntxt, corpus/bach/choraleAnalyses). " + MUSIC21_NOTE,
                             "unclear"),
    "palestrina": Licence("public domain (G. P. da Palestrina, d. 1594)",
                          "Humdrum **kern encodings of the masses (music21 corpus/palestrina). " + MUSIC21_NOTE,
                          "unclear"),
    "monteverdi": Licence("public domain (C. Monteverdi, d. 1643)",
                          "MusicXML encodings with Roman-numeral analyses (rntxt) in music21 corpus/monteverdi. "
                          + MUSIC21_NOTE, "unclear"),
    "trecento": Licence("public domain (14th-century Italian music)",
                        "encodings after Polyphonic Music of the Fourteenth Century (PMFC) in music21 corpus/trecento. "
                        + MUSIC21_NOTE, "unclear"),
    "quartets": Licence("public domain (Haydn, Mozart, Beethoven)",
                        "MusicXML/Humdrum encodings in music21 corpus/{haydn,mozart,beethoven}. " + MUSIC21_NOTE,
                        "unclear"),
    "essen": Licence("traditional (Essen folksong collection, EsAC)",
                     "EsAC database encoded under H. Schaffrath, ABC by S. Schlien; corpus/essenFolksong/license.txt: "
                     "permission for NON-COMMERCIAL distribution and use in music21; legal status unclear.",
                     "no"),
    "ryans_mammoth": Licence("public domain (Ryan's Mammoth Collection, Boston 1883; traditional tunes)",
                             "ABC transcriptions in music21 corpus/ryansMammoth. " + MUSIC21_NOTE, "unclear"),
    "oneills": Licence("public domain (O'Neill's Music of Ireland, 1903; traditional tunes)",
                       "ABC transcribed by Norbert Paap (per the files' Z: lines), music21 corpus/oneills1850. "
                       + MUSIC21_NOTE, "unclear"),
    "airds_airs": Licence("public domain (Aird's Selection of Scotch, English, Irish and Foreign Airs, 1782-1803)",
                          "ABC in music21 corpus/airdsAirs. " + MUSIC21_NOTE, "unclear"),
    "misc_folk": Licence("public domain (American fife tunes; Northumbrian Minstrelsy, 1882)",
                         "ABC in music21 corpus/miscFolk. " + MUSIC21_NOTE, "unclear"),
    "romantic_misc": Licence("public domain (composers d. before 1950, works published before 1929)",
                             "single MusicXML/Humdrum encodings in music21 corpus (chopin, schumann, joplin, ...). "
                             + MUSIC21_NOTE, "unclear"),
}


@dataclass(frozen=True)
class Collection:
    name: str
    globs: tuple[str, ...]          # relative to the music21 corpus root
    composer: str                   # "" -> read from the score's metadata per work
    era: str
    genre: str
    style: str                      # style of a plain render: "classical" or "folk"
    tempo: tuple[int, int]          # quarter-note BPM range for renders
    weight: float                   # share of the render stream
    melodic: bool = False           # single-line tunes (usable as arrangement melodies)
    abc_tunes: bool = False         # files hold many tunes separated by X: lines; one tune = one work
    meta: dict = field(default_factory=dict, compare=False, hash=False)  # per-file overrides (composer, era, genre)


_ROMANTIC_META = {
    "chopin": ("Frederic Chopin", "romantic", "piano mazurka"),
    "schumann_clara": ("Clara Schumann", "romantic", "piano piece"),
    "schumann_robert": ("Robert Schumann", "romantic", "art song"),
    "joplin": ("Scott Joplin", "modern", "ragtime"),
    "schubert": ("Franz Schubert", "romantic", "art song"),
    "beach": ("Amy Beach", "romantic", "piano piece"),
    "liliuokalani": ("Liliuokalani", "romantic", "song"),
    "johnson_j_r": ("J. Rosamond Johnson", "modern", "hymn"),
    "verdi": ("Giuseppe Verdi", "romantic", "opera aria"),
    "weber": ("Carl Maria von Weber", "romantic", "concertino"),
    "handel": ("George Frideric Handel", "baroque", "opera aria"),
    "corelli": ("Arcangelo Corelli", "baroque", "trio sonata"),
    "cpebach": ("Carl Philipp Emanuel Bach", "classical", "keyboard sonata"),
    "mozart/k545": ("Wolfgang Amadeus Mozart", "classical", "piano sonata"),
}

COLLECTIONS: dict[str, Collection] = {c.name: c for c in (
    Collection("bach_chorales", ("bach/*.mxl", "bach/*.xml", "bach/*.krn"), "Johann Sebastian Bach", "baroque",
               "chorale", "classical", (56, 96), 0.20, melodic=False),
    Collection("palestrina", ("palestrina/*.krn",), "Giovanni Pierluigi da Palestrina", "renaissance", "mass",
               "classical", (84, 126), 0.11),
    Collection("monteverdi", ("monteverdi/*.mxl",), "Claudio Monteverdi", "renaissance", "madrigal",
               "classical", (72, 112), 0.07),
    Collection("trecento", ("trecento/*.xml", "trecento/*.mxl"), "", "medieval", "medieval song",
               "classical", (60, 100), 0.04),
    Collection("quartets", ("haydn/*/*.mxl", "mozart/k1*/*.mxl", "mozart/k4*/*.mxl", "mozart/k8*/*.mxl",
                            "beethoven/*.mxl", "beethoven/*/*.mxl"), "", "classical", "string quartet",
               "classical", (60, 144), 0.10),
    Collection("essen", ("essenFolksong/*.abc",), "traditional", "traditional", "folk song", "folk", (72, 132),
               0.16, melodic=True, abc_tunes=True),
    Collection("ryans_mammoth", ("ryansMammoth/*.abc",), "traditional", "traditional", "fiddle tune", "folk",
               (88, 138), 0.11, melodic=True, abc_tunes=True),
    Collection("oneills", ("oneills1850/*.abc",), "traditional", "traditional", "Irish folk tune", "folk",
               (72, 132), 0.08, melodic=True, abc_tunes=True),
    Collection("airds_airs", ("airdsAirs/*.abc",), "traditional", "traditional", "Scottish air", "folk",
               (60, 120), 0.05, melodic=True, abc_tunes=True),
    Collection("misc_folk", ("miscFolk/*.abc",), "traditional", "traditional", "folk tune", "folk",
               (80, 132), 0.02, melodic=True, abc_tunes=True),
    Collection("romantic_misc", tuple(f"{d}/*.*" for d in _ROMANTIC_META if "/" not in d)
               + tuple(f"{d}/*/*.*" for d in ("corelli", "handel", "schumann_clara", "schumann_robert"))
               + ("mozart/k545/*.mxl",), "", "romantic", "piano piece", "classical", (60, 132), 0.06,
               meta=_ROMANTIC_META),
)}

SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")


@dataclass(frozen=True)
class WorkRef:
    """One work: the split unit. `files` are (relative path, abc tune index or -1) pairs, in a fixed order."""

    collection: str
    work_id: str
    title: str
    files: tuple[tuple[str, int], ...]
    meter: str = ""              # declared meter when known without parsing (ABC "M:" line), else ""


def corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def check_collections(names: list[str] | tuple[str, ...]) -> None:
    for n in names:
        if n not in COLLECTIONS:
            raise choice_error("collection", n, tuple(COLLECTIONS))


def abc_meter(tune_text: str) -> str:
    m = re.search(r"(?m)^M:\s*([0-9]+/[0-9]+|C\||C)\s*$", tune_text)
    if not m:
        return ""
    return {"C": "4/4", "C|": "2/2"}.get(m.group(1), m.group(1))


def _abc_tunes(text: str) -> list[tuple[int, str, str]]:
    """Split an ABC file into (X number, title, tune text). Tunes start at lines beginning with 'X:'."""
    chunks = re.split(r"(?m)^(?=X:)", text)
    tunes = []
    for ch in chunks:
        m = re.match(r"X:\s*(\d+)", ch)
        if not m:
            continue
        t = re.search(r"(?m)^T:\s*(.*)$", ch)
        tunes.append((int(m.group(1)), (t.group(1).strip() if t else f"tune {m.group(1)}"), ch))
    return tunes


@functools.lru_cache(maxsize=64)
def abc_tune_text(rel_path: str, index: int) -> str:
    """The text of the index-th tune (0-based, file order) of an ABC file, with the file's header lines kept."""
    text = (corpus_root() / rel_path).read_text(encoding="latin-1")
    return _abc_tunes(text)[index][2]


def _group_key(coll: Collection, rel: str, root: Path) -> tuple[str, str]:
    """(work_id, title) of a non-ABC file: files sharing a work_id form one work."""
    p = Path(rel)
    if coll.name == "bach_chorales":
        # bwv248.23-2 / bwv248.23-s are variants of one chorale: group by the BWV number before any suffix
        stem = re.sub(r"-[a-z0-9]+$", "", p.stem)
        return f"bach/{stem}", stem.upper().replace("BWV", "BWV ")
    if coll.name == "palestrina":
        head = (root / rel).read_text(encoding="latin-1", errors="replace")[:3000]
        m = re.search(r"(?m)^!!!OPR:\s*(.*)$", head)
        mass = m.group(1).strip() if m else p.stem
        return "palestrina/" + re.sub(r"[^A-Za-z0-9]+", "_", mass).strip("_").lower(), mass
    if len(p.parts) > 2 and coll.name in ("quartets", "romantic_misc"):
        return "/".join(p.parts[:2]), p.parts[1]            # composer/opus/movement: movements are one work
    return str(p.with_suffix("")), p.stem


@functools.cache
def list_works(name: str) -> tuple[WorkRef, ...]:
    """All works of a collection, sorted by work_id (deterministic across machines and runs)."""
    coll = COLLECTIONS[name]
    root = corpus_root()
    files: list[str] = sorted({str(p.relative_to(root)) for g in coll.globs for p in root.glob(g)
                               if p.suffix in SCORE_SUFFIXES and "choraleAnalyses" not in p.parts
                               and not p.name.startswith("test")})
    if coll.name == "bach_chorales":   # one encoding per stem: prefer .mxl, then .xml, then .krn
        by_stem: dict[str, str] = {}
        for f in sorted(files, key=lambda f: (Path(f).stem, SCORE_SUFFIXES.index(Path(f).suffix))):
            by_stem.setdefault(Path(f).stem, f)
        files = sorted(by_stem.values())
    if coll.name == "romantic_misc":   # drop .krn/.xml twins of an .mxl
        stems = {str(Path(f).with_suffix("")) for f in files if f.endswith(".mxl")}
        files = [f for f in files if f.endswith(".mxl") or str(Path(f).with_suffix("")) not in stems]
    works: dict[str, tuple[str, list[tuple[str, int]], str]] = {}
    for rel in files:
        if coll.abc_tunes:
            tunes = _abc_tunes((root / rel).read_text(encoding="latin-1"))
            for i, (x, title, body) in enumerate(tunes):
                works[f"{Path(rel).with_suffix('')}#{i}"] = (title, [(rel, i)], abc_meter(body))
            continue
        wid, title = _group_key(coll, rel, root)
        works.setdefault(wid, (title, [], ""))[1].append((rel, -1))
    return tuple(WorkRef(name, wid, title, tuple(fs), meter) for wid, (title, fs, meter) in sorted(works.items()))


def collection_meta(coll: Collection, rel_path: str) -> tuple[str, str, str]:
    """(composer, era, genre) for a file, honouring per-folder overrides."""
    for key in sorted(coll.meta, key=len, reverse=True):
        if rel_path.startswith(key + "/"):
            return coll.meta[key]
    return coll.composer, coll.era, coll.genre


# --- Roman-numeral analyses ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _bach_analyses() -> dict[str, str]:
    """BWV stem (e.g. 'bwv269') -> rntxt path, from the 'BWV:' header lines of corpus/bach/choraleAnalyses."""
    out = {}
    for p in sorted((corpus_root() / "bach" / "choraleAnalyses").glob("*.rntxt")):
        m = re.search(r"(?m)^BWV:\s*(\S+)", p.read_text(encoding="utf-8", errors="replace"))
        if m:
            bwv = m.group(1).replace("(2)", "")            # 'BWV: 248(2).12' -> 248.12
            out["bwv" + bwv.rstrip("s")] = str(p.relative_to(corpus_root()))
    return out


def analysis_path(rel_path: str) -> str | None:
    """The rntxt analysis that matches a score file, when the corpus has one."""
    p = Path(rel_path)
    if p.parts[0] == "monteverdi":
        cand = p.with_suffix(".rntxt")
        return str(cand) if (corpus_root() / cand).exists() else None
    if p.parts[0] == "bach":
        return _bach_analyses().get(re.sub(r"-[a-z0-9]+$", "", p.stem))
    return None
