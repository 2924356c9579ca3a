"""Audit rows are written unsealed and sealed into the hash chain afterwards (audit.services).

Every existing row is sealed already and stays as it is. On PostgreSQL the append-only trigger of the
table is replaced by one that lets an unsealed row take its seal and its response's status, once,
and refuses any other change, and any change at all to a sealed row (but the GDPR actor -> NULL).
"""

from django.conf import settings
from django.db import migrations, models

AUDIT_ROW_GUARD = """
CREATE OR REPLACE FUNCTION audit_adminauditlog_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit rows are append-only: delete refused' USING ERRCODE = 'restrict_violation';
    END IF;
    old_row := to_jsonb(OLD);
    new_row := to_jsonb(NEW);
    -- A deleted user (GDPR) leaves the row without its actor; actor_email keeps who it was.
    IF NEW.actor_id IS NULL THEN
        old_row := old_row - 'actor_id';
        new_row := new_row - 'actor_id';
    END IF;
    IF OLD.sequence IS NULL THEN
        -- Unsealed: the sealer sets the seal once, and the response's status may be filled in once.
        old_row := old_row - 'sequence' - 'prev_hash' - 'row_hash';
        new_row := new_row - 'sequence' - 'prev_hash' - 'row_hash';
        IF OLD.status_code IS NULL THEN
            old_row := old_row - 'status_code';
            new_row := new_row - 'status_code';
        END IF;
    END IF;
    IF old_row IS DISTINCT FROM new_row THEN
        RAISE EXCEPTION 'audit rows are append-only: update refused' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS audit_adminauditlog_append_only ON audit_adminauditlog;
CREATE TRIGGER audit_adminauditlog_guard BEFORE UPDATE OR DELETE ON audit_adminauditlog
    FOR EACH ROW EXECUTE FUNCTION audit_adminauditlog_guard();
"""

APPEND_ONLY_AGAIN = """
DROP TRIGGER IF EXISTS audit_adminauditlog_guard ON audit_adminauditlog;
DROP FUNCTION IF EXISTS audit_adminauditlog_guard();
CREATE TRIGGER audit_adminauditlog_append_only BEFORE UPDATE OR DELETE ON audit_adminauditlog
    FOR EACH ROW EXECUTE FUNCTION billing_append_only('actor_id');
"""


def guard_install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(AUDIT_ROW_GUARD, params=None)


def guard_remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY_AGAIN, params=None)


def chain_head_ensure(apps, schema_editor):
    """The head exists before the first seal, so the console can select it to seal on demand."""
    apps.get_model("audit", "AuditChainHead").objects.get_or_create(chain="admin_audit")


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_payment_event_moved_to_payments'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='adminauditlog',
            options={'ordering': ['-timestamp', '-id']},
        ),
        migrations.AlterField(
            model_name='adminauditlog',
            name='prev_hash',
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name='adminauditlog',
            name='row_hash',
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name='adminauditlog',
            name='sequence',
            field=models.BigIntegerField(editable=False, help_text='Position in the hash chain; empty until sealed.', null=True, unique=True),
        ),
        migrations.AlterField(
            model_name='adminauditlog',
            name='status_code',
            field=models.PositiveSmallIntegerField(blank=True, help_text='The HTTP status the client received; empty while its response is on its way.', null=True),
        ),
        migrations.AddIndex(
            model_name='adminauditlog',
            index=models.Index(condition=models.Q(('sequence__isnull', True)), fields=['created_at', 'id'], name='audit_unsealed_idx'),
        ),
        migrations.RunPython(guard_install, guard_remove, elidable=False),
        migrations.RunPython(chain_head_ensure, migrations.RunPython.noop),
    ]
