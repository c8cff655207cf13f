"""Django fixture app (single file): ``python django_app.py PORT debug|prod``."""

import sys

import django
from django.conf import settings

DEBUG = sys.argv[2] == "debug"
settings.configure(
    DEBUG=DEBUG,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="django-insecure-7q$w!fixture-only-not-a-real-key-3k9z",
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.db import connection  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def orders(request, order_id):
    return JsonResponse({"id": order_id, "status": "shipped", "items": 3, "total": "59.00"})


def boom(request):
    totals = {"count": 0, "sum": 120}
    return JsonResponse({"avg": totals["sum"] / totals["count"]})


def db(request):
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM invoices WHERE id = %s", [request.GET.get("id", "1")])
        return JsonResponse({"rows": cur.fetchall()})


urlpatterns = [
    path("api/orders/<int:order_id>", orders),
    path("api/boom", boom),
    path("api/invoices", db),
]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line([sys.argv[0], "runserver", f"127.0.0.1:{sys.argv[1]}", "--noreload",
                               "--skip-checks"])
