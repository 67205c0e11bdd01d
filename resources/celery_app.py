"""The Celery workers' app: dagster-celery's step task on the broker, backend and settings the
code location's executor uses (resources/executor.py), so workers and run workers always agree.
Started by deploy/celery-workers as `celery -A resources.celery_app worker`; this is the
customisation dagster-celery documents in place of its default app (whose broker is fixed to
localhost)."""

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from resources.executor import celery_app_args

app = make_app(celery_app_args())
execute_plan = create_task(app)
