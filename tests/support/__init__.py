"""What tests share: synthetic videos, a served tiny model, fake services, tiny datasets.

Imported as ``tests.support.<module>`` (the repository root is on ``sys.path``: pytest's
``pythonpath`` setting in pyproject.toml).
"""
