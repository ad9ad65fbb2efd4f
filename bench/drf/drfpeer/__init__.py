"""SIT's API as a minimal Django REST Framework project: the peer the benchmark compares to."""
