import secrets

from django.conf import settings
from django.db import models


def new_issue_id() -> str:
    return secrets.token_hex(6)


class Issue(models.Model):
    STATUSES = [("O", "open"), ("C", "closed")]

    issue_id = models.CharField(max_length=12, unique=True, default=new_issue_id)
    title = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=1, choices=STATUSES, default="O", db_index=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
