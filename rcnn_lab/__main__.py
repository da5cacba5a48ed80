"""``python -m rcnn_lab`` runs the command-line interface."""

from rcnn_lab.cli import main

raise SystemExit(main())
