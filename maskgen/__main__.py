"""``python -m maskgen``: the ``maskgen`` command line."""

from maskgen.cli import app

if __name__ == "__main__":
    app(prog_name="maskgen")
