"""Layer 2, where studies are kept: the SQL storage, its retries, the trials' weight artifacts, the trial record."""
