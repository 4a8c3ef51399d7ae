"""The `medgen` command. Each verb lives in ``medgen/commands/<verb>.py`` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; the work itself is one
importable function in the library. Verbs whose module is not built are absent.

Errors a user can fix (``MedgenError``) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

VERBS = ["info", "convert", "phantoms", "train", "evaluate", "infer", "score", "demo", "ui"]


def _verb_modules():
    for verb in VERBS:
        name = f"medgen.commands.{verb}"
        if importlib.util.find_spec(name) is not None:
            yield verb, importlib.import_module(name)


def build_parser() -> argparse.ArgumentParser:
    from medgen import __version__

    parser = argparse.ArgumentParser(prog="medgen", description="3D medical generative models on MONAI.")
    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, module in _verb_modules():
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class _NotesToStderr(logging.Handler):
    """The library's notes (:mod:`medgen.notes`) as plain lines on whatever ``sys.stderr`` is when
    one is written."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _show_notes() -> None:
    from medgen.notes import logger

    if not any(isinstance(h, _NotesToStderr) for h in logger.handlers):
        logger.addHandler(_NotesToStderr())


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one line, ``medgen: warning: ...``, not its source file and line."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"medgen: warning: {text}", file=file or sys.stderr)


def _tame_warnings() -> None:
    import warnings

    warnings.showwarning = _one_line_warning


def main(argv: list[str] | None = None) -> int:
    # No phone-home: medical users expect none, and there is no network here.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from medgen.errors import MedgenError

    _show_notes()
    _tame_warnings()

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except MedgenError as e:
        print(f"medgen {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medgen {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
