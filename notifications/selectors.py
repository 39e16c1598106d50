from .models import Profile

EMPTY_PROFILE = Profile(document_count=0, storage_bytes=0, login_count=0)


def profile_of(user) -> Profile:
    """The user's counters; all zero until a worker first writes them (reads never write)."""
    return Profile.objects.filter(user=user).first() or EMPTY_PROFILE
