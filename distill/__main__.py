"""``python -m distill``: the ``distill`` command line (also under ``torchrun -m distill``)."""

from distill.cli import app

if __name__ == "__main__":
    app(prog_name="distill")
