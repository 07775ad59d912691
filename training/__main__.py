"""`python -m training …` is the same as `axon train|export|models …`."""

from training.cli import main

raise SystemExit(main())
