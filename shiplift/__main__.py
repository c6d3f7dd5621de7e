"""The ``shiplift`` command (``[project.scripts]``) and ``python -m shiplift``.

The cyclic garbage collector is off while the CLI starts: importing SQLAlchemy, pydantic and
Typer, and building the config's pydantic models, allocate enough objects to set off a few dozen
collections that find nothing to free (about a tenth of an everyday command's time here).
:func:`shiplift.cli.main` turns it back on for every command but the short ones.
"""

import gc


def main() -> None:
    gc.disable()
    from shiplift.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
