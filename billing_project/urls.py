from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from billing_project import health
from billing_project.dashboard import dashboard_view
from billing_project.errors_views import api_not_found, bad_request, server_error
from billing_project.schema_views import CachedSchemaView
from payments.api.urls import webhook_urlpatterns

# The busiest routes first (Stripe's deliveries, one pattern, then usage and balances): Django tries
# the patterns in order, each miss costing a little. No two apps' patterns match the same path (test_urls).
api_v1 = [
    *webhook_urlpatterns,
    path("", include("credits.api.urls")),
    path("", include("payments.api.urls")),
    path("", include("billing_project.accounts_urls")),
    path("", include("subscriptions.api.urls")),
    path("", include("licensing.api.urls")),
    path("", include("coupons.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("billing_project.webhooks_urls")),
]

admin.site.index_template = "admin/billing_index.html"

# The API and the probes first, the console after: each pattern tried before the match costs a little.
urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("health", health.liveness, name="health"),
    path("health/ready", health.readiness, name="health-ready"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("api/schema/", CachedSchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

handler400 = bad_request
handler404 = api_not_found
handler500 = server_error
