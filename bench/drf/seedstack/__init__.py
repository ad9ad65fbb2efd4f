"""The seed's own stack: the DRF peer plus what the original Django SIT ran beside it, a Celery
task with a countdown per assignment (`send_assignment_email`), on Redis."""
