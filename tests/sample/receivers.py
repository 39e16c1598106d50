from . import tasks


def stamp_new_note(sender, instance, created, raw=False, **kwargs):
    # Recorded in the transaction that creates the note; published only once it commits.
    if created and not raw:
        tasks.stamp_note.offload(note_id=instance.pk)
