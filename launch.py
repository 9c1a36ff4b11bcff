"""privjax command line, from the repository: the same as the `privjax` command.

  python launch.py --config=configs/default.py --workdir=runs/default

See privjax/cli.py (and `python launch.py --help`).
"""

from privjax.cli import console

if __name__ == "__main__":
  console()
