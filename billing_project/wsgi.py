import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")

application = get_wsgi_application()

from billing_project.checks import refuse_unsafe_production_start  # noqa: E402

refuse_unsafe_production_start()
