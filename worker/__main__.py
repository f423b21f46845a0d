"""`python -m worker`: the phase-worker consumer (R-12.1)."""

from worker.cli import worker_main

raise SystemExit(worker_main())
