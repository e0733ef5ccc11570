"""The shared kernel: settings, errors, the data model, dates, files, processes, progress, logging.

It imports nothing else of streamflow; every other package may import it."""
