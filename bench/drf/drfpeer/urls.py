from rest_framework.routers import SimpleRouter
from tracker.views import IssueViewSet

router = SimpleRouter()
router.register("api", IssueViewSet, basename="issue")
urlpatterns = router.urls
