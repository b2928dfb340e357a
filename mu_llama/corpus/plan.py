"""The build plan: which clip ids exist and what each one renders, decided before any audio is made.

Two independent, prefix-stable streams: render clips r00000, r00001, ... (plain renders of works) and arrangement
clips a00000, ... (popular-style arrangements of melodies). Clip k of a stream depends only on the seed, the options
and k, never on how many clips are built: building N clips and then extending to M gives exactly the first M clips
of a single M-clip build, which is what makes an interrupted or extended build resume to the same corpus.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from mu_llama.corpus.sources import COLLECTIONS, list_works

RENDER_STYLES = ("classical", "folk")
ARRANGEMENT_STYLES = ("rock", "pop ballad", "funk", "reggae", "swing", "bossa nova", "waltz", "march",
                      "electronic dance", "solo")
# melody sources for arrangements: folk tunes and chorale melodies (the soprano line), as weights
ARRANGEMENT_SOURCES = {"essen": 0.30, "ryans_mammoth": 0.18, "oneills": 0.16, "airds_airs": 0.10, "misc_folk": 0.04,
                       "bach_chorales": 0.22}


@dataclass(frozen=True)
class ClipSpec:
    clip_id: str
    kind: str                   # "render" | "arrange"
    collection: str
    work_candidates: tuple[int, ...]   # indices into list_works(collection): the first that renders is used
    seed: tuple[int, ...]       # np.random.default_rng(seed) drives every choice of this clip
    style: str                  # render: the collection's style; arrange: the arrangement style


def _stable(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _stream(seed: int, stream: int, n: int, weights: dict[str, float], tag: str, attempts: int = 4,
            accept=None, accept_collection=None):
    """Prefix-stable (collection, work candidates, clip seed) for clips 0..n-1 of one stream.
    `accept(k, work)` (optional) filters candidates, e.g. by the meter an arrangement style needs;
    `accept_collection(k, name)` drops collections with no acceptable work for clip k."""
    names = sorted(weights)
    p = np.array([weights[c] for c in names], dtype=float)
    p = p / p.sum()
    counts = dict.fromkeys(names, 0)
    perms = {c: np.random.default_rng([seed, stream, _stable(c)]).permutation(len(list_works(c))) for c in names}
    for k in range(n):
        rng = np.random.default_rng([seed, stream, 1_000_003, k])
        if accept_collection is not None:
            pk = p * np.array([accept_collection(k, c) for c in names], dtype=float)
            pk = pk / pk.sum()
        else:
            pk = p
        c = names[int(rng.choice(len(names), p=pk))]
        j = counts[c]
        counts[c] += 1
        perm = perms[c]
        works = list_works(c)
        # later candidates are far along the permutation, so a failing work's fallbacks are other works
        cands: list[int] = []
        for a in range(len(perm)):
            w = int(perm[(j + a * 7919) % len(perm)])
            if accept is None or accept(k, works[w]):
                cands.append(w)
            if len(cands) == attempts or a > 40 * attempts:
                break
        yield f"{tag}{k:05d}", c, tuple(cands) or (int(perm[j % len(perm)]),), (seed, stream, k)


def plan(clips: int, seed: int, collections: tuple[str, ...], styles: tuple[str, ...],
         arrangement_share: float) -> list[ClipSpec]:
    """All clip specs of a build of `clips` clips (renders first, then arrangements)."""
    arr_styles = tuple(s for s in ARRANGEMENT_STYLES if s in styles)
    arr_sources = {c: w for c, w in ARRANGEMENT_SOURCES.items() if c in collections}
    n_arr = int(round(clips * arrangement_share)) if arr_styles and arr_sources else 0
    n_ren = clips - n_arr
    ren_weights = {c: COLLECTIONS[c].weight for c in collections if COLLECTIONS[c].style in styles}
    if not ren_weights:
        n_ren, n_arr = 0, clips if arr_styles and arr_sources else 0
    specs = [ClipSpec(cid, "render", c, cands, s, COLLECTIONS[c].style)
             for cid, c, cands, s in _stream(seed, 0, n_ren, ren_weights, "r")] if n_ren else []
    if n_arr:
        # styles rotate through seeded permutations in blocks, so every prefix is balanced across styles
        from mu_llama.corpus.styles import STYLES

        def style_of(k: int) -> str:
            block = np.random.default_rng([seed, 2, k // len(arr_styles)]).permutation(len(arr_styles))
            return arr_styles[int(block[k % len(arr_styles)])]

        def accept(k: int, work) -> bool:
            return not work.meter or work.meter in STYLES[style_of(k)].meters

        fits = {(st, c): any(not w.meter or w.meter in STYLES[st].meters for w in list_works(c))
                for st in arr_styles for c in arr_sources}

        def accept_collection(k: int, c: str) -> bool:
            return fits[(style_of(k), c)]

        # 40 candidates: the first that renders is used (chorales' meters are unknown before parsing, so a waltz may
        # have to try many 4/4 chorales before a 3/4 one)
        for cid, c, cands, s in _stream(seed, 1, n_arr, arr_sources, "a", attempts=40, accept=accept,
                                        accept_collection=accept_collection):
            specs.append(ClipSpec(cid, "arrange", c, cands, s, style_of(s[2])))
    return specs
