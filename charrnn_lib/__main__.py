"""``python -m charrnn_lib train|sample|export ...``: see :mod:`charrnn_lib.cli`."""
from charrnn_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
