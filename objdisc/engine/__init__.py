"""Running a method over a dataset: devices, images, discover, runs, cache, journal, out folder, torchrun, sweeps."""
