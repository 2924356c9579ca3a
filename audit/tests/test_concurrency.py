import pytest

from audit.models import AdminAuditLog
from audit.selectors import audit_chain_verify
from audit.services import audit_record
from conftest import run_concurrently

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_parallel_appends_form_one_unforked_chain(staff_user):
    results = run_concurrently(
        lambda n: audit_record(action="update", resource_type="probe", resource_id=str(n), actor=staff_user),
        list(range(20)),
    )

    assert all(not isinstance(result, Exception) for result in results), results
    assert sorted(AdminAuditLog.objects.values_list("sequence", flat=True)) == list(range(1, 21))
    assert audit_chain_verify() is None
