"""`zooserve library ...`: build a spectral library bundle into the model repository from an
MGF file, and simulate MGF libraries (and noisy queries of them) with the zoo's spectrum
simulator."""

from __future__ import annotations

import argparse
from pathlib import Path


def _build(args: argparse.Namespace) -> int:
    from zooserve.serving.search.library_build import LibraryBuildError, build_library
    from zooserve.serving.settings import Settings
    from zooserve.spectra.mgf import MgfError

    models = Settings.from_sources({"models": args.models}).models
    try:
        report = build_library(
            models, args.name, Path(args.spectra), model=args.model,
            model_version=args.model_version, backend=args.backend, qdrant=args.qdrant,
            batch=args.batch, description=args.description or "",
        )
    except (LibraryBuildError, MgfError, OSError) as exc:
        raise SystemExit(f"zooserve library build: error: {exc}; nothing was written") from None
    except KeyboardInterrupt:
        raise SystemExit("zooserve library build: interrupted; nothing was written") from None
    print(report.describe())
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from zooserve.spectra.mgf import write_mgf
    from zooserve.spectra.simulator import noisy_copy, simulate_library

    if args.count < 1 or (args.queries and args.query_count < 1):
        raise SystemExit("zooserve library simulate: error: --count and --query-count must "
                         "be at least 1")
    picked: list = []
    every = max(1, args.count // args.query_count) if args.queries else 0

    def keep_some(spectra):
        for spectrum in spectra:
            if every and spectrum.number % every == 0 and len(picked) < args.query_count:
                picked.append(spectrum)
            yield spectrum

    written = write_mgf(Path(args.out), keep_some(simulate_library(args.count, args.seed)))
    print(f"{args.out}: {written} simulated library spectra (seed {args.seed})")
    if args.queries:
        rng = np.random.default_rng([args.seed, 7])
        queries = write_mgf(Path(args.queries), (noisy_copy(s, rng) for s in picked))
        print(f"{args.queries}: {queries} noisy copies of library spectra (ORIGINAL= names "
              "each one's library entry)")
    return 0


def add_library_commands(commands) -> None:
    library = commands.add_parser("library", help="build spectral libraries for search")
    verbs = library.add_subparsers(dest="library_command", required=True,
                                   parser_class=type(library))
    build = verbs.add_parser("build", help="embed an MGF file's spectra into a library bundle "
                             "served as a search model")
    build.add_argument("--spectra", required=True, help="MGF file (.mgf or .mgf.gz)")
    build.add_argument("--name", required=True, help="the library's name: the search model "
                       "it is served as")
    build.add_argument("--model", default="spectra_embedding",
                       help="the embedding model [spectra_embedding]")
    build.add_argument("--model-version", type=int, help="its version [the highest]")
    build.add_argument("--backend", default="exact", choices=("exact", "ann", "qdrant"),
                       help="exact (numpy), ann (faiss HNSW; kept only if its measured "
                       "recall@10 is at least 0.99) or qdrant [exact]")
    build.add_argument("--qdrant", help="with --backend qdrant: a Qdrant engine's URL [a local "
                       "store in the library's folder]")
    build.add_argument("--batch", type=int, default=512, help="spectra per ONNX Runtime run")
    build.add_argument("--description", help="what the library holds")
    build.add_argument("--models", help="model repository folder [ZOOSERVE_MODELS, models]")
    build.set_defaults(func=_build)

    simulate = verbs.add_parser("simulate", help="write a synthetic MGF library (and noisy "
                                "queries of it) from the zoo's spectrum simulator")
    simulate.add_argument("--count", type=int, required=True, help="library spectra")
    simulate.add_argument("--out", required=True, help="MGF file to write")
    simulate.add_argument("--seed", type=int, default=1, help="[1]")
    simulate.add_argument("--queries", help="also write noisy copies of library spectra here")
    simulate.add_argument("--query-count", type=int, default=100, help="how many [100]")
    simulate.set_defaults(func=_simulate)
