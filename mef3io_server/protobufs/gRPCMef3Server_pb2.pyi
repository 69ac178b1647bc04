from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenFileRequest(_message.Message):
    __slots__ = ("file_path", "cache_fs", "allow_mixed_rates", "password")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CACHE_FS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MIXED_RATES_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    cache_fs: float
    allow_mixed_rates: bool
    password: str
    def __init__(self, file_path: _Optional[str] = ..., cache_fs: _Optional[float] = ..., allow_mixed_rates: _Optional[bool] = ..., password: _Optional[str] = ...) -> None: ...

class FileInfoRequest(_message.Message):
    __slots__ = ("file_path",)
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    def __init__(self, file_path: _Optional[str] = ...) -> None: ...

class FileInfoResponse(_message.Message):
    __slots__ = ("file_path", "file_opened", "number_of_channels", "channel_names", "channel_sampling_rates", "start_uutc", "end_uutc", "duration_s", "channel_start_uutc", "channel_end_uutc", "channel_served_sampling_rates", "cache_fs", "error_message", "channel_sampling_rates_exact", "channel_units", "encrypted", "access_level", "channel_units_conversion_factors", "channel_descriptions")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_OPENED_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SAMPLING_RATES_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_START_UUTC_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_END_UUTC_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SERVED_SAMPLING_RATES_FIELD_NUMBER: _ClassVar[int]
    CACHE_FS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SAMPLING_RATES_EXACT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_UNITS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_UNITS_CONVERSION_FACTORS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_DESCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    file_opened: bool
    number_of_channels: int
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    channel_sampling_rates: _containers.RepeatedScalarFieldContainer[float]
    start_uutc: int
    end_uutc: int
    duration_s: float
    channel_start_uutc: _containers.RepeatedScalarFieldContainer[int]
    channel_end_uutc: _containers.RepeatedScalarFieldContainer[int]
    channel_served_sampling_rates: _containers.RepeatedScalarFieldContainer[float]
    cache_fs: float
    error_message: str
    channel_sampling_rates_exact: _containers.RepeatedScalarFieldContainer[float]
    channel_units: _containers.RepeatedScalarFieldContainer[str]
    encrypted: bool
    access_level: str
    channel_units_conversion_factors: _containers.RepeatedScalarFieldContainer[float]
    channel_descriptions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_path: _Optional[str] = ..., file_opened: _Optional[bool] = ..., number_of_channels: _Optional[int] = ..., channel_names: _Optional[_Iterable[str]] = ..., channel_sampling_rates: _Optional[_Iterable[float]] = ..., start_uutc: _Optional[int] = ..., end_uutc: _Optional[int] = ..., duration_s: _Optional[float] = ..., channel_start_uutc: _Optional[_Iterable[int]] = ..., channel_end_uutc: _Optional[_Iterable[int]] = ..., channel_served_sampling_rates: _Optional[_Iterable[float]] = ..., cache_fs: _Optional[float] = ..., error_message: _Optional[str] = ..., channel_sampling_rates_exact: _Optional[_Iterable[float]] = ..., channel_units: _Optional[_Iterable[str]] = ..., encrypted: _Optional[bool] = ..., access_level: _Optional[str] = ..., channel_units_conversion_factors: _Optional[_Iterable[float]] = ..., channel_descriptions: _Optional[_Iterable[str]] = ...) -> None: ...

class SignalRangeRequest(_message.Message):
    __slots__ = ("file_path", "channel_names", "start_uutc", "end_uutc", "n_points", "dtype", "montage", "filters", "mixed_rates")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    N_POINTS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MONTAGE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MIXED_RATES_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    start_uutc: int
    end_uutc: int
    n_points: int
    dtype: str
    montage: _containers.RepeatedCompositeFieldContainer[DerivedChannel]
    filters: _containers.RepeatedCompositeFieldContainer[SignalFilter]
    mixed_rates: bool
    def __init__(self, file_path: _Optional[str] = ..., channel_names: _Optional[_Iterable[str]] = ..., start_uutc: _Optional[int] = ..., end_uutc: _Optional[int] = ..., n_points: _Optional[int] = ..., dtype: _Optional[str] = ..., montage: _Optional[_Iterable[_Union[DerivedChannel, _Mapping]]] = ..., filters: _Optional[_Iterable[_Union[SignalFilter, _Mapping]]] = ..., mixed_rates: _Optional[bool] = ...) -> None: ...

class DerivedChannel(_message.Message):
    __slots__ = ("name", "inputs", "weights", "average_of")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_OF_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    average_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ..., average_of: _Optional[_Iterable[str]] = ...) -> None: ...

class SignalFilter(_message.Message):
    __slots__ = ("kind", "hz", "order", "q")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HZ_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    kind: str
    hz: _containers.RepeatedScalarFieldContainer[float]
    order: int
    q: float
    def __init__(self, kind: _Optional[str] = ..., hz: _Optional[_Iterable[float]] = ..., order: _Optional[int] = ..., q: _Optional[float] = ...) -> None: ...

class SignalChunk(_message.Message):
    __slots__ = ("file_path", "array_bytes", "dtype", "shape", "start_uutc", "end_uutc", "fs", "channel_names", "error_message", "total_samples", "sample_offset", "padding", "group", "channel_index")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    ARRAY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    FS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    array_bytes: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    start_uutc: int
    end_uutc: int
    fs: float
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    error_message: str
    total_samples: int
    sample_offset: int
    padding: bytes
    group: int
    channel_index: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, file_path: _Optional[str] = ..., array_bytes: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., start_uutc: _Optional[int] = ..., end_uutc: _Optional[int] = ..., fs: _Optional[float] = ..., channel_names: _Optional[_Iterable[str]] = ..., error_message: _Optional[str] = ..., total_samples: _Optional[int] = ..., sample_offset: _Optional[int] = ..., padding: _Optional[bytes] = ..., group: _Optional[int] = ..., channel_index: _Optional[_Iterable[int]] = ...) -> None: ...

class ListOpenFilesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOpenFilesResponse(_message.Message):
    __slots__ = ("file_paths", "error_message")
    FILE_PATHS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file_paths: _containers.RepeatedScalarFieldContainer[str]
    error_message: str
    def __init__(self, file_paths: _Optional[_Iterable[str]] = ..., error_message: _Optional[str] = ...) -> None: ...

class EnvelopeRequest(_message.Message):
    __slots__ = ("file_path", "channel_names", "start_uutc", "end_uutc")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    start_uutc: int
    end_uutc: int
    def __init__(self, file_path: _Optional[str] = ..., channel_names: _Optional[_Iterable[str]] = ..., start_uutc: _Optional[int] = ..., end_uutc: _Optional[int] = ...) -> None: ...

class ChannelEnvelope(_message.Message):
    __slots__ = ("file_path", "channel_name", "start_uutc", "end_uutc", "min", "max", "error_message")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    channel_name: str
    start_uutc: _containers.RepeatedScalarFieldContainer[int]
    end_uutc: _containers.RepeatedScalarFieldContainer[int]
    min: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    error_message: str
    def __init__(self, file_path: _Optional[str] = ..., channel_name: _Optional[str] = ..., start_uutc: _Optional[_Iterable[int]] = ..., end_uutc: _Optional[_Iterable[int]] = ..., min: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ..., error_message: _Optional[str] = ...) -> None: ...

class RecordsRequest(_message.Message):
    __slots__ = ("file_path", "channel_names", "start_uutc", "end_uutc")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    start_uutc: int
    end_uutc: int
    def __init__(self, file_path: _Optional[str] = ..., channel_names: _Optional[_Iterable[str]] = ..., start_uutc: _Optional[int] = ..., end_uutc: _Optional[int] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("time_uutc", "type", "text", "channel", "level", "segment", "locked", "duration_us", "body_json")
    TIME_UUTC_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    time_uutc: int
    type: str
    text: str
    channel: str
    level: str
    segment: int
    locked: bool
    duration_us: int
    body_json: str
    def __init__(self, time_uutc: _Optional[int] = ..., type: _Optional[str] = ..., text: _Optional[str] = ..., channel: _Optional[str] = ..., level: _Optional[str] = ..., segment: _Optional[int] = ..., locked: _Optional[bool] = ..., duration_us: _Optional[int] = ..., body_json: _Optional[str] = ...) -> None: ...

class RecordsChunk(_message.Message):
    __slots__ = ("file_path", "records", "error_message")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    error_message: str
    def __init__(self, file_path: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., error_message: _Optional[str] = ...) -> None: ...

class SegmentsRequest(_message.Message):
    __slots__ = ("file_path", "channel_names")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_path: _Optional[str] = ..., channel_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ChannelSegments(_message.Message):
    __slots__ = ("file_path", "channel_name", "sampling_rate", "start_uutc", "end_uutc", "start_sample", "number_of_samples", "error_message")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_RATE_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    channel_name: str
    sampling_rate: float
    start_uutc: _containers.RepeatedScalarFieldContainer[int]
    end_uutc: _containers.RepeatedScalarFieldContainer[int]
    start_sample: _containers.RepeatedScalarFieldContainer[int]
    number_of_samples: _containers.RepeatedScalarFieldContainer[int]
    error_message: str
    def __init__(self, file_path: _Optional[str] = ..., channel_name: _Optional[str] = ..., sampling_rate: _Optional[float] = ..., start_uutc: _Optional[_Iterable[int]] = ..., end_uutc: _Optional[_Iterable[int]] = ..., start_sample: _Optional[_Iterable[int]] = ..., number_of_samples: _Optional[_Iterable[int]] = ..., error_message: _Optional[str] = ...) -> None: ...

class ListRecordingsRequest(_message.Message):
    __slots__ = ("root", "recursive")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    root: str
    recursive: bool
    def __init__(self, root: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class RecordingEntry(_message.Message):
    __slots__ = ("path", "number_of_channels", "start_uutc", "end_uutc", "min_sampling_rate", "max_sampling_rate", "size_bytes", "encrypted", "error_message")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NUMBER_OF_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    START_UUTC_FIELD_NUMBER: _ClassVar[int]
    END_UUTC_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLING_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLING_RATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    path: str
    number_of_channels: int
    start_uutc: int
    end_uutc: int
    min_sampling_rate: float
    max_sampling_rate: float
    size_bytes: int
    encrypted: bool
    error_message: str
    def __init__(self, path: _Optional[str] = ..., number_of_channels: _Optional[int] = ..., start_uutc: _Optional[int] = ..., end_uutc: _Optional[int] = ..., min_sampling_rate: _Optional[float] = ..., max_sampling_rate: _Optional[float] = ..., size_bytes: _Optional[int] = ..., encrypted: _Optional[bool] = ..., error_message: _Optional[str] = ...) -> None: ...

class RecordingsChunk(_message.Message):
    __slots__ = ("recordings", "error_message")
    RECORDINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    recordings: _containers.RepeatedCompositeFieldContainer[RecordingEntry]
    error_message: str
    def __init__(self, recordings: _Optional[_Iterable[_Union[RecordingEntry, _Mapping]]] = ..., error_message: _Optional[str] = ...) -> None: ...
