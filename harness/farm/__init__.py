"""Device farms: labgrid places as devices (`labgrid.py`), the farm file (`farmfile.py`) and the
nightly run over every farm device (`nightly.py`, with its JSON and JUnit summaries in
`summary.py`). The trend report of nightlies is in `harness/report/nightly.py`, where pandas is.
"""
