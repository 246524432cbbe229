"""The CellProfiler baseline (paper Fig. 2): segment cells, measure CellProfiler features per
cell (the real CellProfiler headless, or its measurement code in-process via cp-measure),
per-image profiles, quantile thresholding into sparse codes, and the comparison with the
dictionaries. Import-light: the CellProfiler environment imports this package.
"""
