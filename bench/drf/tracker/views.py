from typing import Any

from rest_framework import permissions, viewsets

from tracker.models import Issue
from tracker.serializers import IssueSerializer


class IsCreatorOrReadOnly(permissions.BasePermission):
    """Anyone signed in reads; only the creator changes or deletes."""

    def has_object_permission(self, request: Any, view: Any, obj: Issue) -> bool:
        return request.method in permissions.SAFE_METHODS or obj.created_by_id == request.user.id


class IssueViewSet(viewsets.ModelViewSet):
    queryset = Issue.objects.select_related("created_by").order_by("-created_at", "-id")
    serializer_class = IssueSerializer
    permission_classes = [permissions.IsAuthenticated, IsCreatorOrReadOnly]

    def perform_create(self, serializer: IssueSerializer) -> None:
        serializer.save(created_by=self.request.user)
