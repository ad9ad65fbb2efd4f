from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework.routers import SimpleRouter

router = SimpleRouter()
router.register("api", import_string(settings.ISSUE_VIEWSET), basename="issue")
urlpatterns = router.urls
