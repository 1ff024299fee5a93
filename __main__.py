"""``python -m dxdt``: the dxdt command line (see :mod:`dxdt._cli`)."""

from ._cli import main

raise SystemExit(main())
