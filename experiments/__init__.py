"""Research scripts that measure the scores and metrics themselves, not speed (run from the repository root:
python -m experiments.<name>)."""
