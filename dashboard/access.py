"""Who may see and do what on the dashboard, checked in every view (fragments included).

Readers are merchandisers and admins (``engagement.permissions.user_may_read``);
admins (staff or ``recsys-admin``) may also retrain, cancel, promote and roll back.
Anonymous visitors go to the login page; a signed-in user without the right gets 403.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from engagement.permissions import Roles, user_roles

View = Callable[..., HttpResponse]


def _login_redirect(request: HttpRequest) -> HttpResponse:
    if getattr(request, "htmx", False):
        # A fragment request must not swap the login page into a panel: send the whole
        # browser there, and back to the page it was on afterwards.
        current = request.htmx.current_url_abs_path or request.get_full_path()
        login = resolve_url(settings.LOGIN_URL)
        return HttpResponseClientRedirect(f"{login}?{urlencode({'next': current})}")
    return redirect_to_login(request.get_full_path())


def _guard(allowed: Callable[[Roles], bool]) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return _login_redirect(request)
            # Kept on the request: views and templates ask "may this user act?" again
            # (to show or hide the controls) without another query.
            request.roles = user_roles(request.user)
            if not allowed(request.roles):
                if request.htmx and request.method == "GET":
                    # A panel polling for a user whose rights were taken away would get
                    # 403 every 2 s forever (htmx swaps no error and keeps polling):
                    # reload the page instead, which shows the 403.
                    return HttpResponseClientRefresh()
                raise PermissionDenied("Your account may not do this.")
            response = view(request, *args, **kwargs)
            # The same URL answers a whole page or, to htmx, a fragment: a cache (the
            # browser's, for Back) must keep them apart.
            patch_vary_headers(response, ("HX-Request",))
            return response

        return wrapped

    return decorator


reader_required = _guard(lambda roles: roles.may_read)
"""Merchandisers and admins."""

admin_required = _guard(lambda roles: roles.may_administer)
"""Staff and the recsys-admin group: the actions that change what serves."""


def actor_of(request: HttpRequest) -> str:
    """Who is acting, in the words TrainingRun.triggered_by and ModelPromotion.actor use."""
    return f"user:{request.user.get_username()}"
