from django.db import connection
from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import path


def index(request):
    tables = connection.introspection.table_names()
    return HttpResponse(
        "<!doctype html><title>heroku-django</title>"
        f'<link rel="stylesheet" href="{static("css/site.css")}">'
        f"<h1>Hello from Django</h1><p>migrated: {'auth_user' in tables}</p>"
    )


urlpatterns = [path("", index)]
