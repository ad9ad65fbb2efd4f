from typing import Any

from django.conf import settings
from rest_framework import serializers

from tracker.models import Issue


class IssueSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Issue
        fields = [
            "id",
            "issue_id",
            "title",
            "description",
            "assigned_to",
            "created_by",
            "status",
            "created_at",
            "updated_at",
            "url",
        ]
        read_only_fields = ["issue_id", "created_at", "updated_at"]

    def get_url(self, issue: Any) -> str:
        return f"{settings.PUBLIC_URL}/api/{issue.pk}/"
