"""Input rules, shared by the JSON API and the HTML pages so both reject the same things."""

from django import forms
from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.template.defaultfilters import filesizeformat

from . import services

User = get_user_model()


class SignUpForm(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(max_length=254)
    password = forms.CharField(strip=False, widget=forms.PasswordInput, max_length=4096)

    def clean(self):
        cleaned = super().clean()
        if "password" in cleaned:
            candidate = User(username=cleaned.get("username", ""), email=cleaned.get("email", ""))
            try:
                password_validation.validate_password(cleaned["password"], candidate)
            except forms.ValidationError as error:
                self.add_error("password", error)
        return cleaned


class UploadField(forms.FileField):
    """A file no larger than DOCUMENT_MAX_BYTES."""

    default_error_messages = {
        "too_large": "The file is %(size)s; the largest accepted is %(limit)s.",
    }

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if upload and upload.size > settings.DOCUMENT_MAX_BYTES:
            raise forms.ValidationError(
                self.error_messages["too_large"],
                code="too_large",
                params={
                    "size": filesizeformat(upload.size),
                    "limit": filesizeformat(settings.DOCUMENT_MAX_BYTES),
                },
            )
        return upload


class DocumentForm(forms.Form):
    title = forms.CharField(max_length=200)
    file = UploadField(max_length=150, allow_empty_file=True)


class ReplaceFileForm(forms.Form):
    file = UploadField(max_length=150, allow_empty_file=True)


class ShareForm(forms.Form):
    email = forms.EmailField(max_length=254)


class EmailForm(forms.Form):
    email = forms.EmailField(max_length=254)


class CloseAccountForm(forms.Form):
    password = forms.CharField(strip=False, widget=forms.PasswordInput, max_length=4096)


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Django's form and view; the email is an effect like the others (services.py)."""

    def get_users(self, email):
        # Django's, and also the accounts that never had a password and never signed in: those
        # import_users made set their first one this way. An account whose password an admin
        # made unusable stays shut, as do inactive ones.
        users = list(super().get_users(email))
        never_signed_in = User._default_manager.filter(
            email__iexact=email, is_active=True, last_login__isnull=True
        )
        return users + [
            user
            for user in never_signed_in
            if not user.has_usable_password() and user.email.casefold() == email.casefold()
        ]

    def save(self, **kwargs) -> None:
        services.request_password_reset(self.get_users(self.cleaned_data["email"]))
