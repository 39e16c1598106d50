from celery import shared_task

from offload import EffectTask

from .models import Stamp


# user_arg=None: a note belongs to no user. atomic: the stamp and "done" commit together.
@shared_task(base=EffectTask, name="sample.stamp_note", user_arg=None, atomic=True)
def stamp_note(note_id: int) -> None:
    Stamp.objects.create(note_id=note_id)
