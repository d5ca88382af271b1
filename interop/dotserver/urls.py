from django.contrib.auth import views as auth_views
from django.urls import include, path
from oauth2_provider.views import OAuthServerMetadataView

from . import views

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    # RFC 8414 metadata at the origin: the issuer is http://127.0.0.1:PORT (no OpenID Connect here,
    # so a client's discovery falls back from /.well-known/openid-configuration to this).
    path(".well-known/oauth-authorization-server", OAuthServerMetadataView.as_view()),
    path("accounts/login/", auth_views.LoginView.as_view()),
    path("api/me", views.me),
    path("stats", views.stats),
]
