from typing import Any

from django.conf import settings
from tracker import views
from tracker.serializers import IssueSerializer

from seedstack.tasks import send_assignment_email


class IssueViewSet(views.IssueViewSet):
    """The DRF peer's issues, each new assignment scheduling its email as the seed did (on a
    create, and on a change that names another assignee)."""

    def perform_create(self, serializer: IssueSerializer) -> None:
        super().perform_create(serializer)
        self.schedule_email(serializer.instance, None)

    def perform_update(self, serializer: IssueSerializer) -> None:
        previous = serializer.instance.assigned_to_id
        super().perform_update(serializer)
        self.schedule_email(serializer.instance, previous)

    @staticmethod
    def schedule_email(issue: Any, previous_assignee_id: int | None) -> None:
        if issue.assigned_to_id and issue.assigned_to_id != previous_assignee_id:
            countdown = settings.ASSIGNMENT_DELAY
            send_assignment_email.apply_async((issue.issue_id,), countdown=countdown)
