"""The project's Lightning callbacks (the rest come from Lightning itself, see conf/callbacks/):
:mod:`.speed` (training images/s), :mod:`.artefacts` (the run's pictures and tables),
:mod:`.random_state` (every RNG state in the checkpoints, for resume), :mod:`.progress` (the console's
progress display)."""
