"""The seed's assignment email, sent by a Celery worker when the task's countdown ends."""

from django.core.mail import send_mail
from tracker.models import Issue

from seedstack.celery import app


@app.task
def send_assignment_email(issue_id: str) -> None:
    issue = Issue.objects.select_related("assigned_to").get(issue_id=issue_id)
    if issue.assigned_to is None or not issue.assigned_to.email:
        return
    body = f"Hello,\n\nThis email is regarding your open issue:\n\n    {issue.issue_id}\n"
    send_mail(f"Open Issue: #{issue.issue_id}", body, None, [issue.assigned_to.email])
