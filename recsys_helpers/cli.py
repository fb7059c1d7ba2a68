"""The course's commands: ``python -m recsys_helpers {fetch,make-sample,run,book,grade,sync-cells}``."""

from __future__ import annotations

import argparse
import sys

from .datasets import REGISTRY


def _parser() -> argparse.ArgumentParser:
    # Longer than the package's other functions, but flat: one declaration per option.
    p = argparse.ArgumentParser(
        prog="python -m recsys_helpers",
        description="Model-based recommendation course (PML chapter 5): data and tools.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="download the real Goodreads files")
    f.add_argument("names", nargs="*", metavar="NAME",
                   help=f"datasets to fetch (default: {', '.join(REGISTRY)}); also on "
                        "request: comics_books, fantasy_books, book_genres (titles and "
                        "genres), interactions (Spark)")
    f.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="longest time one file's download may take "
                        "(default: RECSYS_FETCH_DEADLINE or 3 hours)")

    m = sub.add_parser("make-sample", help="write the synthetic sample files")
    m.add_argument("--out", default=None,
                   help="output folder (default: the course's data/ folder)")
    m.add_argument("--size", choices=["sample", "full"], default="sample",
                   help="sample: the bundled files; full: the real files' shapes")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--only", nargs="+", choices=list(REGISTRY), metavar="NAME")
    m.add_argument("--python-literals", action="store_true",
                   help="write review records as Python dict literals instead of JSON")

    r = sub.add_parser("run", help="execute every notebook headless and collect the results")
    r.add_argument("--data", choices=["sample", "full", "auto"], default=None,
                   help="which copy of the data (default: RECSYS_DATA or auto)")
    r.add_argument("--data-dir", default=None, help="folder holding the full files")
    r.add_argument("--only", nargs="+", metavar="NAME",
                   help="notebook file stems (or unique parts of them) to run")
    r.add_argument("--out", default="build/run", help="output folder (default: build/run)")
    r.add_argument("--timeout", type=int, default=3600, help="per-cell time limit in seconds")
    r.add_argument("--inplace", action="store_true",
                   help="also save each executed notebook over its source (to refresh the "
                        "committed outputs; use with --data sample)")

    b = sub.add_parser("book", help="build the course as a static web book (Sphinx, myst-nb) "
                                    "from the executed notebooks")
    b.add_argument("--out", default="build/book", help="output folder, emptied first "
                                                       "(default: build/book)")
    b.add_argument("--data", choices=["sample", "full", "auto"], default="sample",
                   help="whose outputs the pages show: a fresh run on that data from --run-dir "
                        "(the notebooks are run first if there is none; for the bundled "
                        "sample the committed notebooks serve) (default: sample)")
    b.add_argument("--data-dir", default=None, help="folder holding the full files")
    b.add_argument("--run-dir", default="build/run",
                   help="where `run` wrote the executed notebooks (default: build/run)")
    b.add_argument("--instructor", action="store_true",
                   help="the edition with the solutions, marked as such on every page "
                        "(hidden tests are left out of both editions)")

    c = sub.add_parser("sync-cells", help="regenerate the notebook cells that show the "
                                          "package's model code (tagged model-code)")
    c.add_argument("--check", action="store_true",
                   help="only compare; exit 1 when a cell differs from the package")

    g = sub.add_parser("grade", help="autograde a folder of student submissions (nbgrader)")
    g.add_argument("submissions", help="folder with one sub-folder of notebooks per student")
    g.add_argument("--out", default="grades.csv", help="CSV file to write")
    g.add_argument("--timeout", type=int, default=300, help="per-cell time limit in seconds")
    g.add_argument("--jobs", type=int, default=None,
                   help="notebooks graded at the same time (default: the number of CPU cores)")
    g.add_argument("--force", action="store_true",
                   help="grade again the students the CSV already holds (default: skip them)")
    g.add_argument("--executed", metavar="DIR", default=None,
                   help="also save each graded notebook as it ran, with its outputs and every "
                        "test (hidden ones too: for the teacher), as DIR/STUDENT/EXERCISE.ipynb")
    g.add_argument("--feedback", metavar="DIR", default=None,
                   help="also write a page for each student and exercise, to hand back, as "
                        "DIR/STUDENT/EXERCISE.html: the notebook as it ran, the points of "
                        "each test, the visible tests' messages (hidden tests named in words)")
    g.add_argument("--no-sandbox", dest="sandboxed", action="store_false",
                   help="run the students' kernels without the bubblewrap sandbox (only for "
                        "trusted code; then only --max-output applies)")
    # the limits of one graded notebook: a notebook that hits one keeps what it earned
    # before, with a note naming the limit
    from .sandbox import LIMITS, parse_size

    def size(text):
        try:
            return parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    g.add_argument("--max-processes", type=int, default=LIMITS["max_processes"], metavar="N",
                   help="processes and threads a notebook may run at once; more are refused "
                        f"(default: {LIMITS['max_processes']})")
    g.add_argument("--memory", type=size, default=LIMITS["memory"], metavar="SIZE",
                   help="memory a notebook's processes hold together; beyond it the kernel "
                        "is stopped (default: 4G)")
    g.add_argument("--disk", type=size, default=LIMITS["disk"], metavar="SIZE",
                   help="what a notebook may store in its folder and /tmp together; beyond "
                        "it the kernel is stopped (default: 1G)")
    g.add_argument("--max-output", type=size, default=LIMITS["max_output"], metavar="SIZE",
                   help="output kept per notebook; the rest is dropped, errors kept "
                        "(default: 8M; 0 for no limit)")
    g.add_argument("--wall-time", type=int, default=LIMITS["wall_time"], metavar="SECONDS",
                   help="time a notebook's kernel may live; beyond it the kernel is stopped "
                        f"(default: {LIMITS['wall_time']}; 0 for none)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        from .download import fetch_command

        return fetch_command(args.names, deadline=args.deadline)
    if args.command == "make-sample":
        from .datasets import bundled_dir
        from .sample import make_sample

        out = args.out or bundled_dir()
        make_sample(out, size=args.size, seed=args.seed, names=args.only,
                    python_literals=args.python_literals)
        return 0
    if args.command == "run":
        from .runner import run_command

        return run_command(data=args.data, data_dir=args.data_dir, only=args.only,
                           out=args.out, timeout=args.timeout, inplace=args.inplace)
    if args.command == "book":
        from .book import book_command

        return book_command(out=args.out, data=args.data, data_dir=args.data_dir,
                            run_dir=args.run_dir, instructor=args.instructor)
    if args.command == "sync-cells":
        from .notebook_cells import sync_command

        return sync_command(check=args.check)
    if args.command == "grade":
        from .grading import grade_command

        return grade_command(args.submissions, out=args.out, timeout=args.timeout,
                             jobs=args.jobs, sandboxed=args.sandboxed, force=args.force,
                             executed=args.executed, feedback=args.feedback,
                             limits={"max_processes": args.max_processes,
                                     "memory": args.memory, "disk": args.disk,
                                     "max_output": args.max_output,
                                     "wall_time": args.wall_time})
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
