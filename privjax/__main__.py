"""`python -m privjax ...`: the privjax command line (privjax/cli.py)."""

from privjax.cli import console

if __name__ == "__main__":
  console()
