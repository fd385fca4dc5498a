"""The exception tree: every error comfy-drive raises, classed by its cause.

```
DriveError                      one clear message (+ an optional hint), never a traceback for users
├── UserError                   the input is wrong: fix it and run again
│   ├── BadInputFile            a file given is not what it claims (not a workflow, image, video)
│   ├── UnsafePath              a name that would leave its folder, or a link on the way  (confined)
│   ├── ReadOnly                a folder that cannot be written                          (confined)
│   ├── FolderBusy              another run holds the output folder                      (pipeline.outlock)
│   ├── ConversionError         a GUI workflow that cannot become an API graph           (workflow.convert)
│   ├── NotComfyUI              something answers at the URL, but it is not ComfyUI      (comfy.errors)
│   ├── AccessRefused           the server wants credentials                             (comfy.errors)
│   ├── PromptRejected          the server refused the prompt, with its node errors      (comfy.errors)
│   │   └── OutputsDropped      ... accepted, but some outputs were dropped (a 200 with node errors)
│   ├── ModelVerificationFailed a model file or its pin does not match what was promised
│   ├── UnpinnedError           a model entry without a sha256: pin it first             (models.fetch)
│   ├── SignInNeeded, MetadataRejected   YouTube sign-in, video metadata                 (publish.errors)
└── RunError                    the run failed for a reason outside the input
    ├── ServerUnreachable       nobody answers at the URL                                (comfy.errors)
    ├── ServerProtocolError     an answer ComfyUI never gives                            (comfy.errors)
    ├── ExecutionFailed         a node raised while the prompt ran                       (comfy.errors)
    │   └── OutOfMemory         ... because the GPU (or RAM) ran out
    ├── Interrupted             the prompt was interrupted                               (comfy.errors)
    ├── PromptLost              the server forgot a prompt it accepted (a restart)       (comfy.errors)
    ├── JobTimeout              a job did not finish in the time given (also a TimeoutError)
    ├── NoSpace                 the disk is full                                         (confined)
    ├── V2Error, JobExpired     a v2 target refused (InsufficientCredits, Busy, ...); a job it forgot (comfy.v2*)
    ├── ServerGone              a server unreachable for longer than allowed             (pipeline.messages)
    ├── RunStopped, RunFailed   a run stopped by its caller; a task of it failed         (pipeline.control)
    └── PublishError            an upload failed (QuotaExhausted: the day's quota is spent) (publish.errors)
```

Decision: the library never decides exit statuses and its hints never name command-line commands;
the command line maps these classes to exit statuses (and adds its own commands to hints).
"""

from __future__ import annotations


class DriveError(Exception):
    """Base of every error comfy-drive reports to the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UserError(DriveError):
    """Something the user gave us is wrong (file, field, argument): fix the input and rerun."""


class BadInputFile(UserError):
    """A file given as input is not what it claims to be (not a workflow, an image, a video)."""


class ModelVerificationFailed(UserError):
    """A model file, or the pin of one, does not match its models.lock entry or the Hub."""


class RunError(DriveError):
    """The run failed for a reason outside the input (server, node crash, disk)."""


class JobTimeout(RunError, TimeoutError):
    """A job did not finish within the time the caller allowed; it may still be running."""
