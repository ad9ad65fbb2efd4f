"""`manage.py seed --users N --issues M`: SIT's demo shape (demo1..demoN, issues 80 % open and
90 % assigned among them); prints a token for demo1."""

import random
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tracker.models import Issue

WORDS = ("login", "crash", "slow", "page", "export", "report", "search", "email", "cache")


class Command(BaseCommand):
    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--users", type=int, required=True)
        parser.add_argument("--issues", type=int, required=True)

    @transaction.atomic
    def handle(self, *args: Any, users: int, issues: int, **options: Any) -> None:
        User.objects.bulk_create(
            User(
                username=f"demo{n}",
                email=f"demo{n}@example.com",
                first_name="Demo",
                last_name=str(n),
                password="!",
            )
            for n in range(1, users + 1)
        )
        user_ids = list(User.objects.values_list("id", flat=True))
        start = timezone.now() - timedelta(seconds=issues)
        Issue.objects.bulk_create(
            (
                Issue(
                    issue_id=secrets.token_hex(6),
                    title=f"Demo issue {n}: {random.choice(WORDS)}",
                    description=" ".join(random.choices(WORDS, k=12)),
                    status="O" if random.random() < 0.8 else "C",
                    assigned_to_id=random.choice(user_ids) if random.random() < 0.9 else None,
                    created_by_id=random.choice(user_ids),
                )
                for n in range(1, issues + 1)
            ),
            batch_size=5000,
        )
        # auto_now_add ignores given values: spread created_at afterwards, as SIT's seed does
        for n, pk in enumerate(Issue.objects.order_by("id").values_list("id", flat=True), 1):
            Issue.objects.filter(pk=pk).update(
                created_at=start + timedelta(seconds=n), updated_at=start + timedelta(seconds=n)
            )
        token = Token.objects.create(user=User.objects.get(username="demo1"))
        self.stdout.write(token.key)
