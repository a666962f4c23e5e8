// See sql_class.hpp.
#include "protocol/sql_class.hpp"

namespace pgpivot::proto {

namespace {

bool ident_start(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80; }
bool ident_char(unsigned char c) { return ident_start(c) || (c >= '0' && c <= '9') || c == '$'; }
bool space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

bool word_is(std::string_view w, std::string_view upper) {
  if (w.size() != upper.size()) return false;
  for (std::size_t i = 0; i < w.size(); i++) {
    unsigned char c = static_cast<unsigned char>(w[i]);
    if (c >= 'a' && c <= 'z') c = static_cast<unsigned char>(c - 'a' + 'A');
    if (c != static_cast<unsigned char>(upper[i])) return false;
  }
  return true;
}

// Lexes `sql` from `i`; tokens that matter here are words and ';'.
class Lexer {
 public:
  explicit Lexer(std::string_view sql) : s_(sql) {}
  enum class Tok { End, Word, Semi, Other };
  // The next token; for a Word, word() is its text.
  Tok next() {
    for (;;) {
      if (i_ >= s_.size()) return Tok::End;
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (space(c)) {
        i_++;
      } else if (c == '-' && peek(1) == '-') {
        while (i_ < s_.size() && s_[i_] != '\n') i_++;
      } else if (c == '/' && peek(1) == '*') {
        block_comment();
      } else if (c == ';') {
        i_++;
        return Tok::Semi;
      } else if (c == '\'') {
        quoted('\'', false);
        return Tok::Other;
      } else if (c == '"') {
        quoted('"', false);
        return Tok::Other;
      } else if (c == '$' && dollar_quote()) {
        return Tok::Other;
      } else if (ident_start(c)) {
        std::size_t b = i_;
        while (i_ < s_.size() && ident_char(static_cast<unsigned char>(s_[i_]))) i_++;
        word_ = s_.substr(b, i_ - b);
        if (i_ < s_.size() && s_[i_] == '\'') {
          // E'...' takes backslash escapes; B'', X'', N'', U&'' do not.
          bool escapes = word_.size() == 1 && (word_[0] == 'E' || word_[0] == 'e');
          bool prefix = escapes || (word_.size() == 1 && std::string_view("bBxXnN").find(word_[0]) != std::string_view::npos);
          if (prefix) {
            quoted('\'', escapes);
            return Tok::Other;
          }
        }
        return Tok::Word;
      } else {
        i_++;
        return Tok::Other;
      }
    }
  }
  [[nodiscard]] std::string_view word() const { return word_; }

 private:
  [[nodiscard]] char peek(std::size_t k) const { return i_ + k < s_.size() ? s_[i_ + k] : '\0'; }
  void block_comment() {
    int depth = 0;
    while (i_ < s_.size()) {
      if (s_[i_] == '/' && peek(1) == '*') {
        depth++;
        i_ += 2;
      } else if (s_[i_] == '*' && peek(1) == '/') {
        i_ += 2;
        if (--depth == 0) return;
      } else {
        i_++;
      }
    }
  }
  // At the opening quote; doubled quotes stay inside, as do backslash escapes when asked.
  void quoted(char q, bool escapes) {
    i_++;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (escapes && c == '\\') {
        i_ += 2;
      } else if (c == q) {
        if (peek(1) == q) {
          i_ += 2;
        } else {
          i_++;
          return;
        }
      } else {
        i_++;
      }
    }
    i_ = s_.size();
  }
  // At '$': a $tag$ opener (not a $1 parameter) skips to its closer; false otherwise.
  bool dollar_quote() {
    std::size_t j = i_ + 1;
    if (j < s_.size() && ident_start(static_cast<unsigned char>(s_[j]))) {
      while (j < s_.size() && ident_char(static_cast<unsigned char>(s_[j])) && s_[j] != '$') j++;
    }
    if (j >= s_.size() || s_[j] != '$') return false;
    std::string_view tag = s_.substr(i_, j - i_ + 1);
    std::size_t end = s_.find(tag, j + 1);
    i_ = end == std::string_view::npos ? s_.size() : end + tag.size();
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string_view word_;
};

}  // namespace

SqlClass classify_sql(std::string_view sql) {
  SqlClass out;
  Lexer lx(sql);
  bool begins = false;  // the first statement is a transaction start
  int pos = 0;          // tokens seen in the current statement
  std::string_view first;
  for (;;) {
    Lexer::Tok t = lx.next();
    if (t == Lexer::Tok::End) break;
    if (t == Lexer::Tok::Semi) {
      pos = 0;
      continue;
    }
    pos++;
    if (pos == 1) {
      out.statements++;
      first = t == Lexer::Tok::Word ? lx.word() : std::string_view();
      if (word_is(first, "COMMIT") || word_is(first, "END")) out.may_commit = true;
      if (out.statements == 1) begins = word_is(first, "BEGIN");
    } else if (pos == 2 && t == Lexer::Tok::Word) {
      if (word_is(first, "PREPARE") && word_is(lx.word(), "TRANSACTION")) out.may_commit = true;
      if (out.statements == 1 && word_is(first, "START") && word_is(lx.word(), "TRANSACTION")) begins = true;
    }
  }
  out.begin_only = begins && out.statements == 1;
  return out;
}

}  // namespace pgpivot::proto
