from django.urls import path
from rest_framework.routers import SimpleRouter

from licensing.api.views import (
    LicenseActivateView,
    LicenseDeactivateView,
    LicenseEligibilityView,
    LicensePurchaseView,
    LicenseUpgradeView,
    LicenseValidateView,
    MyLicenseListView,
    StaffLicenseViewSet,
)

router = SimpleRouter()
router.register("admin/licenses", StaffLicenseViewSet, basename="admin-license")

urlpatterns = [
    path("licenses/purchase/", LicensePurchaseView.as_view(), name="license-purchase"),
    path("licenses/activate/", LicenseActivateView.as_view(), name="license-activate"),
    path("licenses/deactivate/", LicenseDeactivateView.as_view(), name="license-deactivate"),
    path("licenses/validate/", LicenseValidateView.as_view(), name="license-validate"),
    path("licenses/upgrade/", LicenseUpgradeView.as_view(), name="license-upgrade"),
    path("licenses/<str:license_key>/eligibility/", LicenseEligibilityView.as_view(), name="license-eligibility"),
    path("me/licenses/", MyLicenseListView.as_view(), name="my-licenses"),
    *router.urls,
]
