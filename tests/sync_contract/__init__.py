"""The shared Remote contract suite (contract.py) and the backends' runs of it."""
