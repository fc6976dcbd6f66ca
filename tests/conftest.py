import os
import sys

# The project is flat scripts at the repository root: make them importable from tests/.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(ROOT, "data", "dt_ratings.jsonl.gz")  # the real ratings, shipped with the repository
