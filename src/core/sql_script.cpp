#include "core/sql_script.h"

namespace pgdog_reshard {

namespace {

enum class TokenKind { Space, Comment, Word, Quoted, Symbol, MetaCommand };

struct Token {
  TokenKind kind;
  size_t begin;
  size_t end;
};

// Byte classes of PostgreSQL's lexer (scan.l): identifiers start with a letter, '_' or any
// non-ASCII byte, and continue with those, digits and '$'. ASCII tests by hand: <cctype> would
// depend on the locale.
bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_high_bit(char c) { return static_cast<unsigned char>(c) >= 0x80; }
bool is_word_start(char c) { return is_ascii_letter(c) || c == '_' || is_high_bit(c); }
bool is_word_char(char c) { return is_word_start(c) || is_digit(c) || c == '$'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string upper_ascii(std::string_view word) {
  std::string out(word);
  for (char &c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// Cuts a script into tokens. Everything that may hold a ';' that does not end a statement
// (strings, quoted identifiers, dollar bodies, comments) is one token; unterminated ones run to
// the end of the script.
class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  bool next(Token &token) {
    if (pos_ >= text_.size()) return false;
    size_t begin = pos_;
    TokenKind kind = scan();
    token = Token{kind, begin, pos_};
    return true;
  }

 private:
  char at(size_t i) const { return i < text_.size() ? text_[i] : '\0'; }

  TokenKind scan() {
    char c = text_[pos_];
    if (is_space(c)) {
      while (pos_ < text_.size() && is_space(text_[pos_])) pos_++;
      return TokenKind::Space;
    }
    if (c == '-' && at(pos_ + 1) == '-') return skip_line(TokenKind::Comment);
    if (c == '/' && at(pos_ + 1) == '*') return skip_block_comment();
    if (c == '\'') return skip_quoted('\'', false);
    if (c == '"') return skip_quoted('"', false);
    if (c == '$' && skip_dollar_quoted()) return TokenKind::Quoted;
    if (c == '\\') return skip_line(TokenKind::MetaCommand);
    if (is_word_start(c) || is_digit(c)) return scan_word();
    pos_++;
    return TokenKind::Symbol;
  }

  // A word; E'...' (or e'...') is an escape string, where a backslash escapes the next byte.
  TokenKind scan_word() {
    size_t begin = pos_;
    while (pos_ < text_.size() && is_word_char(text_[pos_])) pos_++;
    bool escape_prefix = pos_ - begin == 1 && (text_[begin] == 'E' || text_[begin] == 'e');
    if (escape_prefix && at(pos_) == '\'') return skip_quoted('\'', true);
    return TokenKind::Word;
  }

  // Through the end of the line, not including the newline.
  TokenKind skip_line(TokenKind kind) {
    size_t newline = text_.find('\n', pos_);
    pos_ = newline == std::string_view::npos ? text_.size() : newline;
    return kind;
  }

  // /* ... */ comments nest in SQL, unlike C.
  TokenKind skip_block_comment() {
    int depth = 0;
    while (pos_ < text_.size()) {
      if (text_[pos_] == '/' && at(pos_ + 1) == '*') {
        depth++;
        pos_ += 2;
      } else if (text_[pos_] == '*' && at(pos_ + 1) == '/') {
        pos_ += 2;
        if (--depth == 0) break;
      } else {
        pos_++;
      }
    }
    return TokenKind::Comment;
  }

  // From an opening quote through its closing one; a doubled quote is part of the text.
  TokenKind skip_quoted(char quote, bool backslash_escapes) {
    pos_++;
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (backslash_escapes && c == '\\') {
        pos_++;
      } else if (c == quote) {
        if (at(pos_) != quote) break;
        pos_++;
      }
    }
    if (pos_ > text_.size()) pos_ = text_.size();  // a trailing backslash
    return TokenKind::Quoted;
  }

  // $tag$ ... $tag$, the tag empty or identifier-like (not starting with a digit: $1 is a
  // parameter). False, consuming nothing, when the '$' opens no quote.
  bool skip_dollar_quoted() {
    size_t tag_end = pos_ + 1;
    if (is_word_start(at(tag_end))) {
      while (tag_end < text_.size() && is_word_char(text_[tag_end]) && text_[tag_end] != '$') {
        tag_end++;
      }
    }
    if (at(tag_end) != '$') return false;
    std::string_view tag = text_.substr(pos_, tag_end + 1 - pos_);
    size_t close = text_.find(tag, tag_end + 1);
    pos_ = close == std::string_view::npos ? text_.size() : close + tag.size();
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// Follows the statement being read and says when a ';' ends it.
//
// Like psql: a ';' inside parentheses belongs to the statement (a rule's action list), and so does
// one inside the BEGIN ... END of a CREATE [OR REPLACE] FUNCTION/PROCEDURE (a SQL-standard body,
// BEGIN ATOMIC), where CASE ... END nests as well.
class StatementTracker {
 public:
  void word(std::string_view text) {
    std::string upper = upper_ascii(text);
    if (head_.size() < 4) head_.push_back(upper);
    if (paren_depth_ > 0 || !is_routine()) return;
    if (upper == "BEGIN") {
      begin_depth_++;
    } else if (upper == "CASE" && begin_depth_ > 0) {
      begin_depth_++;
    } else if (upper == "END" && begin_depth_ > 0) {
      begin_depth_--;
    }
  }

  // True when `c` ends the statement.
  bool symbol(char c) {
    if (c == '(') paren_depth_++;
    if (c == ')' && paren_depth_ > 0) paren_depth_--;
    return c == ';' && paren_depth_ == 0 && begin_depth_ == 0;
  }

 private:
  bool is_routine() const {
    auto is = [this](size_t i, const char *word) { return i < head_.size() && head_[i] == word; };
    size_t kind = is(1, "OR") && is(2, "REPLACE") ? 3 : 1;
    return is(0, "CREATE") && (is(kind, "FUNCTION") || is(kind, "PROCEDURE"));
  }

  std::vector<std::string> head_;  // the first words, upper-cased
  int paren_depth_ = 0;
  int begin_depth_ = 0;
};

std::string_view trim_right(std::string_view text) {
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

}  // namespace

std::vector<ScriptStatement> split_sql_script(std::string_view script) {
  std::vector<ScriptStatement> statements;
  Lexer lexer(script);
  StatementTracker tracker;
  size_t leading_begin = 0;                 // where the text before the next statement starts
  size_t start = std::string_view::npos;    // the current statement's first token

  // The statement [first, end), after the text since the previous one.
  auto emit = [&](size_t first, size_t end, bool meta) {
    ScriptStatement statement;
    statement.leading_comments = std::string(script.substr(leading_begin, first - leading_begin));
    statement.sql = std::string(trim_right(script.substr(first, end - first)));
    statement.meta_command = meta;
    statements.push_back(std::move(statement));
    tracker = StatementTracker();
    start = std::string_view::npos;
    leading_begin = end;
  };

  Token token{};
  while (lexer.next(token)) {
    if (token.kind == TokenKind::Space || token.kind == TokenKind::Comment) continue;
    if (start == std::string_view::npos) {
      if (token.kind == TokenKind::MetaCommand) {
        emit(token.begin, token.end, true);
        continue;
      }
      start = token.begin;
    }
    std::string_view text = script.substr(token.begin, token.end - token.begin);
    if (token.kind == TokenKind::Word) tracker.word(text);
    if (token.kind == TokenKind::Symbol && tracker.symbol(text[0])) emit(start, token.end, false);
  }
  if (start != std::string_view::npos) emit(start, script.size(), false);
  return statements;
}

std::vector<std::string> statement_words(std::string_view sql, size_t max_words) {
  std::vector<std::string> words;
  Lexer lexer(sql);
  Token token{};
  while (words.size() < max_words && lexer.next(token)) {
    if (token.kind == TokenKind::Space || token.kind == TokenKind::Comment) continue;
    std::string_view text = sql.substr(token.begin, token.end - token.begin);
    words.push_back(token.kind == TokenKind::Word ? upper_ascii(text) : std::string(text));
  }
  return words;
}

}  // namespace pgdog_reshard
