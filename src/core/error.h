// The project's one exception type: every error that reaches a user carries a SQLSTATE,
// a one-line message naming the object, and optionally a detail (the facts) and a hint (the fix).
// The PostgreSQL glue turns it into ereport(ERROR) at the boundary; the core never sees server headers.
#pragma once

#include <stdexcept>
#include <string>

namespace pgdog_reshard {

// SQLSTATE codes used by the project (PostgreSQL's errcodes.txt names in comments).
namespace sqlstate {
inline constexpr const char *kInvalidParameterValue = "22023";   // invalid_parameter_value
inline constexpr const char *kNullValueNotAllowed = "22004";     // null_value_not_allowed
inline constexpr const char *kInvalidTextRepresentation = "22P02"; // invalid_text_representation
inline constexpr const char *kConfigFileError = "F0000";         // config_file_error
inline constexpr const char *kUndefinedObject = "42704";         // undefined_object
inline constexpr const char *kUndefinedTable = "42P01";          // undefined_table
inline constexpr const char *kUndefinedColumn = "42703";         // undefined_column
inline constexpr const char *kDuplicateObject = "42710";         // duplicate_object
inline constexpr const char *kInsufficientPrivilege = "42501";   // insufficient_privilege
inline constexpr const char *kFeatureNotSupported = "0A000";     // feature_not_supported
inline constexpr const char *kObjectNotInPrerequisiteState = "55000"; // object_not_in_prerequisite_state
inline constexpr const char *kObjectInUse = "55006";            // object_in_use
inline constexpr const char *kUnableToConnect = "08001";         // sqlclient_unable_to_establish_sqlconnection
inline constexpr const char *kConnectionFailure = "08006";       // connection_failure
inline constexpr const char *kInvalidPassword = "28P01";         // invalid_password
inline constexpr const char *kQueryCanceled = "57014";           // query_canceled
inline constexpr const char *kAdminShutdown = "57P01";           // admin_shutdown
inline constexpr const char *kSystemError = "58000";             // system_error (I/O, files)
inline constexpr const char *kUndefinedFile = "58P01";           // undefined_file
inline constexpr const char *kIoError = "58030";                 // io_error
inline constexpr const char *kOutOfMemory = "53200";             // out_of_memory
inline constexpr const char *kConfigurationLimitExceeded = "53400"; // configuration_limit_exceeded
inline constexpr const char *kDuplicateTable = "42P07";          // duplicate_table
inline constexpr const char *kUndefinedFunction = "42883";       // undefined_function
inline constexpr const char *kProtocolViolation = "08P01";       // protocol_violation
inline constexpr const char *kConnectionDoesNotExist = "08003";  // connection_does_not_exist
inline constexpr const char *kBadCopyFileFormat = "22P04";       // bad_copy_file_format
inline constexpr const char *kDatatypeMismatch = "42804";        // datatype_mismatch
// check_violation: what PostgreSQL raises for a row that fits no partition, the same situation as
// a sharding key that no list/range rule maps.
inline constexpr const char *kCheckViolation = "23514";
inline constexpr const char *kExternalRoutineException = "38000"; // external_routine_exception
inline constexpr const char *kInternalError = "XX000";           // internal_error: a bug, never a user mistake
}  // namespace sqlstate

class Error : public std::runtime_error {
 public:
  Error(std::string sqlstate, const std::string &message, std::string detail = {},
        std::string hint = {})
      : std::runtime_error(message),
        sqlstate_(std::move(sqlstate)),
        detail_(std::move(detail)),
        hint_(std::move(hint)) {}

  const std::string &sqlstate() const { return sqlstate_; }
  const std::string &detail() const { return detail_; }
  const std::string &hint() const { return hint_; }

 private:
  std::string sqlstate_;
  std::string detail_;
  std::string hint_;
};

}  // namespace pgdog_reshard
